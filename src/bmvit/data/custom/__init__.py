"""One's own videos and labels: import an annotation export into a bmvit dataset root, and read it back.

``bmvit data import --format cvat|csv|ava`` turns CVAT for video 1.1 XML (``cvat``), a plain CSV
(``table``) or AVA CSVs of any timeline (``ava_timeline``) into ``LabelledBox`` records
(``records``); ``importer`` picks the key frames, splits by video and writes the root; ``root`` reads
the root's ``dataset.yaml`` and builds the key-frame datasets the trainer uses (``data.format=custom``).
See docs/custom_data.md.
"""
