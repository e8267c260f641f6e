"""RLDS (TFDS) export and import of ALOHA-format episodes; see aloha_builder.py."""
