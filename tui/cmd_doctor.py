"""Placeholder: being written."""

def add_arguments(parser):
    pass


def main(args):
    raise NotImplementedError
