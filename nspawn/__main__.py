from nspawn.entry import main

main()
