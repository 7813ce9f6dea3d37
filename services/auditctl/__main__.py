"""``python -m services.auditctl`` and the ``auditctl`` console script run the same group."""

from services.auditctl.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
