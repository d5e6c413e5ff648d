from viewrt.cli import main

main()
