from dqn_cli.cli import main

main()
