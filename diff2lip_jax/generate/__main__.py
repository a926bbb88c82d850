# `python -m diff2lip_jax.generate ...` is `diff2lip-generate ...`; --help shows the CLI's usage.
from diff2lip_jax.generate import cli as _cli

__doc__ = _cli.__doc__

if __name__ == "__main__":
    _cli.run()
