import sys

from zeekndm.cli import main

sys.exit(main())
