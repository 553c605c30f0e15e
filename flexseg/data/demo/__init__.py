"""The procedural demo world: seeded street scenes rendered in several "domains".

``classes`` holds the fine label set and the materials, ``geometry`` the camera and the
rasteriser, ``scene`` the street layout and its objects, ``style`` the looks and the weather, and
``domains`` what each dataset's renders look like and where they are written.
``world`` renders the whole world on disk; ``python -m flexseg.data.demo`` (``__main__``) is its
command.
"""
