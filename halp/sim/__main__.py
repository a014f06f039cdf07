"""``python -m halp.sim``: see :mod:`halp.sim.run`."""

from halp.sim.run import main

if __name__ == "__main__":
    main()
