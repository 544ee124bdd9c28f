"""``python -m pine``: rewrite the bundled scripts after the alert model or pine/render.py changed."""

from pine.render import update_bundled

for changed in update_bundled():
    print(f"rewrote {changed}")
