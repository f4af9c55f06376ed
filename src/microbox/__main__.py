from microbox.cli.main import main

main()
