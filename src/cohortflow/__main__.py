"""Allow `python -m cohortflow`."""

from cohortflow.cli import main

if __name__ == "__main__":
    main()
