"""The robustness benchmark's image sets: corruptions, printed fonts, and the sets themselves."""
