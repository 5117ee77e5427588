from mailcli.cli.app import main

main()
