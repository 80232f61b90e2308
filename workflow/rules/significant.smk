# Significant rules
