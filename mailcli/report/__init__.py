"""`mailcli report`: the analysis as one self-contained HTML page (data in data.py, the page in render.py)."""
