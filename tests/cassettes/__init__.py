"""vcrpy cassettes recorded from the sandbox, and the code that records, scrubs, replays and scans them.

``record.py`` records (``python tests/cassettes/record.py [--service hda|all]``);
``scrub.py`` removes secrets; ``stable.py`` makes recordings independent of the
sandbox's port and random ids; ``replay.py`` builds the VCR both sides use;
``scan.py`` checks committed cassettes for anything secret.
"""
