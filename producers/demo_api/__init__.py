"""The demo business API (projects, expense reports, expenses) whose writes publish actions."""
