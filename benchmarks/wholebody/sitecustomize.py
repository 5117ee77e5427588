"""Put on PYTHONPATH by bench_tokens for its baseline run: the LLM prompts carry each email's whole body
(quoted history, signature and footer in, no reply note), as phases 2 and 3 sent before own-text extraction."""

import mailcli.analysis.prompts as _prompts

_prompts.own_text = lambda body: body.strip()
_prompts.reply_note = lambda body: ""
