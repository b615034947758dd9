"""The web console for ICT coordinators and teachers, served under /console/ by the admin
API's own application and acting only through the API's operations."""
