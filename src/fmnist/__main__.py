import os
import sys

from fmnist.cli.main import main
from fmnist.training import distributed

code = main()
if distributed.from_environment().active:
    # A finished torchrun process can abort in torch's C++ teardown at exit (gloo), failing a run
    # whose files were all written. By now they are written and closed and the group is left:
    # flush the output and skip that teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
