"""Regenerate diffusia/assets/single_file/<arch>/: the config folders single-file checkpoints are loaded with."""

import shutil

from diffusia.models.single_file import ARCHITECTURES, SINGLE_FILE_DIR, write_config

if __name__ == "__main__":
    for name in ARCHITECTURES:
        shutil.rmtree(SINGLE_FILE_DIR / name, ignore_errors=True)
        print(write_config(name, SINGLE_FILE_DIR / name))
