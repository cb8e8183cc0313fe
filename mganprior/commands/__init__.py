"""One module per group of ``mganprior`` commands. Each module is light to import (settings and
heavy libraries load inside its functions) and lists its commands in ``COMMANDS``;
``mganprior.cli`` adds only the chosen command's arguments, so ``mganprior --help`` and
``mganprior invert --help`` load neither torch nor matplotlib."""

# In the order `mganprior --help` lists their commands.
MODULES = ("zoo", "invert", "attribute", "study", "directions", "files", "scenes", "training",
           "demo")
