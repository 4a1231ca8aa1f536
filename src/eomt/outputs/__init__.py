"""What eomt writes: COCO forms (coco_formats), overlays, atomic files, output folders, one image's result
files, progress lines.

The ground floor every stage writes through: imports nothing of eomt outside outputs/.
"""
