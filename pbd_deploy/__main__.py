from pbd_deploy.cli import main

main()
