"""The image stack: sniff, decode (draft), orient, reduce; batch inputs (stills, RAW, video); statistics."""
