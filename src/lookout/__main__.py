from lookout.cli.root import main

main()
