"""Commands outside the DVC pipeline that help choose its params: gradcheck and lr-find."""
