"""``python -m data_pipelines.synthetic`` runs ``diff2lip-synth``."""

from data_pipelines.synthetic import cli

if __name__ == "__main__":
    __doc__ = cli.__doc__  # absl's --help shows the main module's docstring
    cli.run()
