"""The group console's own texts (edufilter hub serve's /console/), key: (nl, fr, en, de); the
pages share the rest with the school's console."""

from __future__ import annotations

from typing import Final

HUB_TEXTS: Final[dict[str, tuple[str, str, str, str]]] = {
    "hub_nav_parts": ("Beleidsdelen", "Parties de la politique", "Policy parts", "Richtlinienteile"),
    "hub_overview_title": ("Overzicht van de groep", "Vue d'ensemble du groupe", "Group overview",
                           "Übersicht der Gruppe"),
    "hub_sites": ("Vestigingen", "Sites", "Sites", "Standorte"),
    "hub_sites_caption": ("Revisie van elk beleidsdeel en blokkeringen per periode",
                          "Révision de chaque partie et blocages par période",
                          "Each part's revision and blocks per period",
                          "Revision jedes Teils und Sperren pro Zeitraum"),
    "hub_site": ("Vestiging", "Site", "Site", "Standort"),
    "hub_revision": ("Revisie", "Révision", "Revision", "Revision"),
    "hub_blocks_in": ("Blokkeringen ({window})", "Blocages ({window})", "Blocks ({window})", "Sperren ({window})"),
    "hub_blocks": ("Blokkeringen", "Blocages", "Blocks", "Sperren"),
    "hub_blocks_by_site": ("Blokkeringen per vestiging", "Blocages par site", "Blocks per site",
                           "Sperren pro Standort"),
    "hub_latest_events": ("Laatste blokkeringen (afgelopen uur)", "Derniers blocages (dernière heure)",
                          "Latest blocks (last hour)", "Letzte Sperren (letzte Stunde)"),
    "hub_name": ("Website", "Site web", "Website", "Website"),
    "hub_whole_group": ("de hele groep", "tout le groupe", "the whole group", "die ganze Gruppe"),
    "hub_group_part": ("Beleid van de groep", "Politique du groupe", "The group's policy", "Richtlinie der Gruppe"),
    "hub_site_part": ("Deel van {site}", "Partie de {site}", "{site}'s part", "Teil von {site}"),
    "hub_parts_title": ("Beleidsdelen", "Parties de la politique", "Policy parts", "Richtlinienteile"),
    "hub_parts_intro": (
        "Elke gateway combineert het beleid van de groep met het deel van haar vestiging.",
        "Chaque passerelle combine la politique du groupe avec la partie de son site.",
        "Each gateway combines the group's policy with its site's part.",
        "Jedes Gateway kombiniert die Richtlinie der Gruppe mit dem Teil seines Standorts.",
    ),
    "hub_files": ("Bestanden", "Fichiers", "Files", "Dateien"),
    "hub_no_files": ("Dit deel heeft nog geen bestanden.", "Cette partie n'a pas encore de fichiers.",
                     "This part has no files yet.", "Dieser Teil hat noch keine Dateien."),
    "hub_edit_file": ("{file} bewerken", "Modifier {file}", "Edit {file}", "{file} bearbeiten"),
    "hub_new_file": ("Nieuw bestand", "Nouveau fichier", "New file", "Neue Datei"),
    "hub_file_name": ("Bestandsnaam", "Nom du fichier", "File name", "Dateiname"),
    "hub_file_hint": ("Een naam die eindigt op .toml, zonder map.", "Un nom finissant par .toml, sans dossier.",
                      "A name ending in .toml, without a folder.", "Ein Name mit der Endung .toml, ohne Ordner."),
    "hub_file_text": ("Inhoud (TOML)", "Contenu (TOML)", "Content (TOML)", "Inhalt (TOML)"),
    "hub_cancel": ("Annuleren", "Annuler", "Cancel", "Abbrechen"),
    "hub_saved": ("{file} is opgeslagen: revisie {revision}.", "{file} est enregistré : révision {revision}.",
                  "{file} is saved: revision {revision}.", "{file} ist gespeichert: Revision {revision}."),
    "hub_conflict": (
        ("Niet opgeslagen: dit deel is gewijzigd sinds u revisie {read} opende (nu revisie {current}). "
         "Uw tekst staat hieronder; open het bestand opnieuw en breng uw wijziging opnieuw aan."),
        ("Non enregistré : cette partie a changé depuis que vous avez ouvert la révision {read} (maintenant "
         "révision {current}). Votre texte est ci-dessous ; rouvrez le fichier et refaites votre modification."),
        ("Not saved: this part changed since you opened revision {read} (it is now revision {current}). "
         "Your text is below; open the file again and redo your change."),
        ("Nicht gespeichert: Dieser Teil wurde geändert, seit Sie Revision {read} geöffnet haben (jetzt "
         "Revision {current}). Ihr Text steht unten; öffnen Sie die Datei erneut und ändern Sie sie noch einmal."),
    ),
    "hub_teachers_elsewhere": (
        "De console van de groep is voor coördinatoren; leerkrachten zetten sites open in de console van hun school.",
        ("La console du groupe est destinée aux coordinateurs ; les enseignants ouvrent des sites dans la "
         "console de leur école."),
        "The group's console is for coordinators; teachers open sites in their school's console.",
        "Die Konsole der Gruppe ist für die Koordination; Lehrkräfte geben Websites in der Konsole ihrer Schule frei.",
    ),
}
