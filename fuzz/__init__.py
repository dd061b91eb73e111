"""Coverage-guided fuzzing of pypluto (issue 13 item 6).

``fuzz.targets`` holds one module per target, each with ``one_input(data: bytes)``
that raises :class:`fuzz.targets.Finding` (or any unexpected exception) when
pypluto misbehaves.  ``fuzz.run`` drives a target with atheris (libFuzzer);
``tests/fuzz`` runs every target briefly and replays ``fuzz/regressions``.
"""
