"""Raw text into sentences of words with exact character offsets."""
