from fmnist.cli.main import run

run()
