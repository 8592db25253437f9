"""Cloud adapters. Each provider implements the verbs of `base.Provider`."""
