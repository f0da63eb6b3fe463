"""The everyday desktop: input sharing, MSI in the guest, audio, monitors (pure generators)."""
