"""ggnet_bootprog: the test boot programs and build.py, which makes their disk image.

Installed under this name (pyproject's package-dir), so tests, benches and the lab
import `ggnet_bootprog.build`; `python bootprog/build.py` still runs it as a script."""
