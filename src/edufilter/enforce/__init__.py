"""Enforce stage: verdicts and marks, the kernel rules that act on them, DNS answers, block page."""
