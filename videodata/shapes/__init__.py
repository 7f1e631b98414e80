"""The shapes world: one object (3 shapes x 6 colours) moving in one of 4 directions on black.

``render`` draws clips from a :class:`~videodata.shapes.render.ClipSpec` and writes captions;
``dataset`` renders whole datasets with their manifests and reads them back. The analyzer that
judges videos of this world lives in :mod:`videoeval.shapes_analyzer`.
"""
