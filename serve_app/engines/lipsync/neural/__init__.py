"""Neural lip-sync engines (Wav2Lip, MuseTalk 1.5) on the user's checkpoints. Needs the
`neural` extra (torch; diffusers and transformers for MuseTalk)."""
