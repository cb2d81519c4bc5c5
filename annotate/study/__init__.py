"""Human rating studies: blinded pairwise comparisons of two editors in Label Studio, with statistics."""
