"""The Qt face of ckptviewer. Importing it checks the Qt binding for known defects (see qtcompat)."""
from .widgets.qtcompat import guard

guard()
