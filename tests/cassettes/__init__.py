"""vcrpy cassettes recorded from the sandbox, and the code that records, scrubs, replays and scans them.

``record.py`` records (``python tests/cassettes/record.py [--service hda|clms|all]``);
``scrub.py`` removes secrets; ``stable.py`` makes recordings independent of the
sandbox's port, random ids and clock; ``replay.py`` builds the VCR both sides use;
``scan.py`` checks committed cassettes for anything secret.  ``hda_inputs.py`` and
``clms_inputs.py`` hold what each service's scenarios ask.
"""
