"""The token cache: a folder of verifiable, resumable shards of token ids made by a frozen tokenizer.

``format`` fixes the on-disk layout and hashing, ``sources`` finds the input media, ``decode`` cuts one source into
clips, ``decode_pool`` isolates decoder crashes and hangs, ``writer`` writes one rank's shards, ``reader``
gives random access for training, and ``build`` runs the whole job.
"""
