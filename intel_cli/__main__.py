"""`python -m intel_cli` runs the same command-line app as `intel`."""

from intel_cli.cli import main

if __name__ == "__main__":
    main()
