from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]

    operations = [
        migrations.AddField("customer", "name", models.TextField(null=True)),
        migrations.AddIndex("customer", models.Index(fields=["name"], name="customer_name_idx")),
        migrations.AddField("order", "note", models.TextField(default="")),
    ]
