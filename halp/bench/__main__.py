"""``python -m halp.bench``: see :mod:`halp.bench.run`."""

from halp.bench.run import main

if __name__ == "__main__":
    main()
