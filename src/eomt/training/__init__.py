"""Training and fine-tuning with the EoMT recipe: recipes (YAML), schedules, augmentation, the loop.

The highest stage below the command line: it may use every package but cli/, and none imports it.
"""
