"""`python -m progressive <command> [flags]`, the same as the `progressive` command."""

from progressive import cli

if __name__ == "__main__":
  cli.main()
