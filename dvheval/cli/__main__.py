from dvheval.cli import main

main()
