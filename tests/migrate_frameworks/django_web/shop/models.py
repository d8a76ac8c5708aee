from django.db import models


class Customer(models.Model):
    email = models.TextField()
    legacy = models.TextField(null=True)
