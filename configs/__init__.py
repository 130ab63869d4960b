"""Job configurations: one frozen dataclass per job with a docstring under every field, and a
``PRESETS: dict[str, tuple[str, Config]]`` of named presets (the first, conventionally ``"default"``, is
used when ``python -m jobs.<name>`` gets no preset). ``configs.common`` holds the pieces every job embeds.
"""
