from nspawn.cli import main

main()
