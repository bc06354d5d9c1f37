import sys

from ftlcloud.cli import main

sys.exit(main())
