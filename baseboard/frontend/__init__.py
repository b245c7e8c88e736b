"""What users reach: plan resolution, `baseboard info` and `baseboard generate`."""
