"""The procedural demo world: seeded street scenes rendered in several "domains".

``classes`` holds the fine label set and the materials, ``geometry`` the camera and the
rasteriser, ``scene`` the street layout and its objects, ``style`` the looks and the weather, and
``domains`` what each dataset's renders look like and where they are written.
``flexseg.data.demo_world`` is the command that renders the whole world.
"""
