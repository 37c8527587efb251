package sim

import "strings"

// place is a city users live around.
type place struct {
	city, state string
	lat, lon    float64
	tz          string // UTC offset, randomuser style
}

// nationality is what randomuser varies by nationality.
type nationality struct {
	code, country     string
	postcode          string // pattern: # digit, N non-zero digit, A letter
	postcodeIsString  bool
	phone, cell       string
	idName, idPattern string // idPattern "" gives a null value
	idNullShare       float64
	maleTitles        []string
	femaleTitles      []string
	male, female      []string
	last, streets     []string
	places            []place
}

var tzDescriptions = map[string]string{
	"-9:00":  "Alaska",
	"-8:00":  "Pacific Time (US & Canada)",
	"-7:00":  "Mountain Time (US & Canada)",
	"-6:00":  "Central Time (US & Canada), Mexico City",
	"-5:00":  "Eastern Time (US & Canada), Bogota, Lima",
	"-4:00":  "Atlantic Time (Canada), Caracas, La Paz",
	"-3:30":  "Newfoundland",
	"-3:00":  "Brazil, Buenos Aires, Georgetown",
	"0:00":   "Western Europe Time, London, Lisbon, Casablanca",
	"+1:00":  "Brussels, Copenhagen, Madrid, Paris",
	"+2:00":  "Kaliningrad, South Africa",
	"+3:00":  "Baghdad, Riyadh, Moscow, St. Petersburg",
	"+3:30":  "Tehran",
	"+5:30":  "Bombay, Calcutta, Madras, New Delhi",
	"+8:00":  "Beijing, Perth, Singapore, Hong Kong",
	"+9:30":  "Adelaide, Darwin",
	"+10:00": "Eastern Australia, Guam, Vladivostok",
	"+12:00": "Auckland, Wellington, Fiji, Kamchatka",
}

func words(s string) []string { return strings.Split(s, ",") }

var mrMs, mrMsMiss = []string{"Mr"}, []string{"Ms", "Miss", "Mrs"}

var nationalities = []nationality{
	{code: "US", country: "United States", postcode: "N####", postcodeIsString: true, phone: "(N##) ###-####", cell: "(N##) ###-####",
		idName: "SSN", idPattern: "###-##-####", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("James,John,Robert,Michael,William,David,Christopher,Daniel"), female: words("Mary,Jennie,Patricia,Jennifer,Linda,Elizabeth,Susan,Jessica"),
		last: words("Smith,Johnson,Williams,Brown,Jones,Nichols,Miller,Davis,Garcia,Wilson"), streets: words("Valwood Pkwy,Main St,Oak Lawn Ave,Cedar St,Hickory Creek Dr"),
		places: []place{{"New York", "New York", 40.71, -74.01, "-5:00"}, {"Los Angeles", "California", 34.05, -118.24, "-8:00"}, {"Chicago", "Illinois", 41.88, -87.63, "-6:00"},
			{"Houston", "Texas", 29.76, -95.37, "-6:00"}, {"Phoenix", "Arizona", 33.45, -112.07, "-7:00"}, {"Philadelphia", "Pennsylvania", 39.95, -75.17, "-5:00"},
			{"Seattle", "Washington", 47.61, -122.33, "-8:00"}, {"Denver", "Colorado", 39.74, -104.99, "-7:00"}, {"Miami", "Florida", 25.76, -80.19, "-5:00"},
			{"Billings", "Montana", 45.78, -108.50, "-7:00"}, {"Anchorage", "Alaska", 61.22, -149.90, "-9:00"}, {"Boston", "Massachusetts", 42.36, -71.06, "-5:00"},
			{"Atlanta", "Georgia", 33.75, -84.39, "-5:00"}, {"Minneapolis", "Minnesota", 44.98, -93.27, "-6:00"}}},
	{code: "GB", country: "United Kingdom", postcode: "AN #AA", postcodeIsString: true, phone: "01### ######", cell: "07### ######",
		idName: "NINO", idPattern: "AA ## ## ## A", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Oliver,Harry,George,Jack,Charlie,Thomas"), female: words("Olivia,Amelia,Isla,Emily,Sophie,Grace"),
		last: words("Smith,Jones,Taylor,Brown,Davies,Evans,Wilson,Thomas"), streets: words("High Street,Church Lane,Victoria Road,Mill Road"),
		places: []place{{"London", "Greater London", 51.51, -0.13, "0:00"}, {"Manchester", "Greater Manchester", 53.48, -2.24, "0:00"}, {"Birmingham", "West Midlands", 52.49, -1.89, "0:00"},
			{"Leeds", "West Yorkshire", 53.80, -1.55, "0:00"}, {"Glasgow", "Scotland", 55.86, -4.25, "0:00"}, {"Edinburgh", "Scotland", 55.95, -3.19, "0:00"},
			{"Cardiff", "Wales", 51.48, -3.18, "0:00"}, {"Belfast", "Northern Ireland", 54.60, -5.93, "0:00"}}},
	{code: "DE", country: "Germany", postcode: "N####", phone: "0###-#######", cell: "01##-#######",
		idName: "SVNR", idPattern: "## ###### A ###", maleTitles: []string{"Herr", "Mr"}, femaleTitles: []string{"Frau", "Ms"},
		male: words("Jörg,Lukas,Felix,Maximilian,Jürgen,Stefan"), female: words("Anna,Lea,Sophie,Jutta,Monika,Ursula"),
		last: words("Müller,Schmidt,Schneider,Fischer,Weber,Schäfer,Becker,Hoffmann"), streets: words("Mühlenweg,Hauptstraße,Schulstraße,Gartenstraße,Bahnhofstraße"),
		places: []place{{"Berlin", "Berlin", 52.52, 13.40, "+1:00"}, {"Hamburg", "Hamburg", 53.55, 9.99, "+1:00"}, {"München", "Bayern", 48.14, 11.58, "+1:00"},
			{"Köln", "Nordrhein-Westfalen", 50.94, 6.96, "+1:00"}, {"Frankfurt am Main", "Hessen", 50.11, 8.68, "+1:00"}, {"Stuttgart", "Baden-Württemberg", 48.78, 9.18, "+1:00"},
			{"Dresden", "Sachsen", 51.05, 13.74, "+1:00"}, {"Weißenburg in Bayern", "Bayern", 49.03, 10.97, "+1:00"}}},
	{code: "FR", country: "France", postcode: "N####", phone: "0#-##-##-##-##", cell: "06-##-##-##-##",
		idName: "INSEE", idPattern: "N############ ##", maleTitles: []string{"Monsieur", "Mr"}, femaleTitles: []string{"Madame", "Mademoiselle", "Ms"},
		male: words("Lucas,Hugo,Louis,Gabriel,Théo,Mathéo"), female: words("Emma,Léa,Chloé,Manon,Camille,Inès"),
		last: words("Martin,Bernard,Dubois,Thomas,Robert,Richard,Petit,Lefèvre"), streets: words("Rue de la Paix,Avenue Jean-Jaurès,Rue Victor-Hugo,Place de la Mairie"),
		places: []place{{"Paris", "Île-de-France", 48.86, 2.35, "+1:00"}, {"Lyon", "Auvergne-Rhône-Alpes", 45.76, 4.84, "+1:00"}, {"Marseille", "Provence-Alpes-Côte d'Azur", 43.30, 5.37, "+1:00"},
			{"Toulouse", "Occitanie", 43.60, 1.44, "+1:00"}, {"Nantes", "Pays de la Loire", 47.22, -1.55, "+1:00"}, {"Strasbourg", "Grand Est", 48.57, 7.75, "+1:00"},
			{"Lille", "Hauts-de-France", 50.63, 3.06, "+1:00"}, {"Bordeaux", "Nouvelle-Aquitaine", 44.84, -0.58, "+1:00"}}},
	{code: "ES", country: "Spain", postcode: "N####", phone: "9##-###-###", cell: "6##-###-###",
		idName: "DNI", idPattern: "########-A", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Hugo,Pablo,Álvaro,Javier,Sergio,Manuel"), female: words("Lucía,María,Paula,Carmen,Sofía,Elena"),
		last: words("García,Fernández,González,Rodríguez,López,Martínez,Sánchez,Pérez"), streets: words("Calle Mayor,Avenida de la Constitución,Calle de Alcalá,Paseo de Gracia"),
		places: []place{{"Madrid", "Comunidad de Madrid", 40.42, -3.70, "+1:00"}, {"Barcelona", "Cataluña", 41.39, 2.17, "+1:00"}, {"Valencia", "Comunidad Valenciana", 39.47, -0.38, "+1:00"},
			{"Sevilla", "Andalucía", 37.39, -5.98, "+1:00"}, {"Bilbao", "País Vasco", 43.26, -2.93, "+1:00"}, {"Zaragoza", "Aragón", 41.65, -0.89, "+1:00"}}},
	{code: "FI", country: "Finland", postcode: "N####", phone: "0#-###-###", cell: "04#-###-##-##",
		idName: "HETU", idPattern: "######-###A", idNullShare: 0.5, maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Eetu,Onni,Veeti,Aapo,Juho,Mikael"), female: words("Aino,Eevi,Ella,Siiri,Venla,Helmi"),
		last: words("Korhonen,Virtanen,Mäkinen,Nieminen,Heikkinen,Koskinen,Järvinen,Lehtonen"), streets: words("Hämeenkatu,Mannerheimintie,Aleksanterinkatu,Pispalan Valtatie"),
		places: []place{{"Helsinki", "Uusimaa", 60.17, 24.94, "+2:00"}, {"Espoo", "Uusimaa", 60.21, 24.66, "+2:00"}, {"Tampere", "Pirkanmaa", 61.50, 23.76, "+2:00"},
			{"Turku", "Varsinais-Suomi", 60.45, 22.27, "+2:00"}, {"Oulu", "Pohjois-Pohjanmaa", 65.01, 25.47, "+2:00"}, {"Kuhmoinen", "Keski-Suomi", 61.56, 25.18, "+2:00"},
			{"Rovaniemi", "Lappi", 66.50, 25.73, "+2:00"}}},
	{code: "AU", country: "Australia", postcode: "N###", phone: "0#-####-####", cell: "04##-###-###",
		idName: "TFN", idPattern: "#########", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Jack,Noah,Lachlan,Cooper,Riley,Liam"), female: words("Charlotte,Chloe,Ruby,Mia,Zoe,Matilda"),
		last: words("Smith,Jones,Williams,Brown,Wilson,Taylor,Anderson,White"), streets: words("George Street,Queen Street,Station Road,Victoria Road"),
		places: []place{{"Sydney", "New South Wales", -33.87, 151.21, "+10:00"}, {"Melbourne", "Victoria", -37.81, 144.96, "+10:00"}, {"Brisbane", "Queensland", -27.47, 153.03, "+10:00"},
			{"Perth", "Western Australia", -31.95, 115.86, "+8:00"}, {"Adelaide", "South Australia", -34.93, 138.60, "+9:30"}, {"Darwin", "Northern Territory", -12.46, 130.84, "+9:30"},
			{"Hobart", "Tasmania", -42.88, 147.33, "+10:00"}}},
	{code: "BR", country: "Brazil", postcode: "N####", phone: "(##) ####-####", cell: "(##) 9####-####",
		idName: "", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Miguel,Arthur,Davi,Pedro,Heitor,Gustavo"), female: words("Alice,Helena,Laura,Valentina,Manuela,Júlia"),
		last: words("Silva,Santos,Oliveira,Souza,Rodrigues,Ferreira,Alves,Pereira"), streets: words("Rua Sete de Setembro,Avenida Paulista,Rua das Flores,Rua São Paulo"),
		places: []place{{"São Paulo", "São Paulo", -23.55, -46.63, "-3:00"}, {"Rio de Janeiro", "Rio de Janeiro", -22.91, -43.17, "-3:00"}, {"Belo Horizonte", "Minas Gerais", -19.92, -43.94, "-3:00"},
			{"Salvador", "Bahia", -12.97, -38.50, "-3:00"}, {"Brasília", "Distrito Federal", -15.79, -47.88, "-3:00"}, {"Porto Alegre", "Rio Grande do Sul", -30.03, -51.23, "-3:00"},
			{"Manaus", "Amazonas", -3.12, -60.02, "-4:00"}}},
	{code: "CA", country: "Canada", postcode: "A#A #A#", postcodeIsString: true, phone: "N##-###-####", cell: "N##-###-####",
		idName: "SIN", idPattern: "#########", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Liam,Noah,Ethan,Logan,Owen,Nathan"), female: words("Emma,Olivia,Chloé,Léa,Charlotte,Ava"),
		last: words("Tremblay,Gagnon,Roy,Côté,Smith,Brown,Martin,Wilson"), streets: words("King St,Queen St,Maple Ave,Rue Sainte-Catherine"),
		places: []place{{"Toronto", "Ontario", 43.65, -79.38, "-5:00"}, {"Montréal", "Québec", 45.50, -73.57, "-5:00"}, {"Vancouver", "British Columbia", 49.28, -123.12, "-8:00"},
			{"Calgary", "Alberta", 51.05, -114.07, "-7:00"}, {"Winnipeg", "Manitoba", 49.90, -97.14, "-6:00"}, {"Halifax", "Nova Scotia", 44.65, -63.58, "-4:00"},
			{"St. John's", "Newfoundland and Labrador", 47.56, -52.71, "-3:30"}}},
	{code: "CH", country: "Switzerland", postcode: "N###", phone: "0## ### ## ##", cell: "07# ### ## ##",
		idName: "AVS", idPattern: "756.####.####.##", maleTitles: []string{"Monsieur", "Mr"}, femaleTitles: []string{"Madame", "Mademoiselle"},
		male: words("Noah,Luca,Leon,Elias,Nico,Jan"), female: words("Mia,Emma,Lara,Léa,Lina,Elena"),
		last: words("Müller,Meier,Schmid,Keller,Weber,Huber,Gerber,Fontana"), streets: words("Bahnhofstrasse,Rue du Rhône,Kirchweg,Dorfstrasse"),
		places: []place{{"Zürich", "Zürich", 47.38, 8.54, "+1:00"}, {"Genève", "Genève", 46.20, 6.14, "+1:00"}, {"Basel", "Basel-Stadt", 47.56, 7.59, "+1:00"},
			{"Bern", "Bern", 46.95, 7.45, "+1:00"}, {"Lausanne", "Vaud", 46.52, 6.63, "+1:00"}, {"Lugano", "Ticino", 46.00, 8.95, "+1:00"}}},
	{code: "DK", country: "Denmark", postcode: "N###", phone: "########", cell: "########",
		idName: "CPR", idPattern: "######-####", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("William,Noah,Oscar,Lucas,Victor,Malthe"), female: words("Ida,Emma,Freja,Clara,Alma,Karla"),
		last: words("Nielsen,Jensen,Hansen,Pedersen,Andersen,Christensen,Larsen,Sørensen"), streets: words("Strøget,Vestergade,Nørregade,Kirkevej"),
		places: []place{{"København", "Hovedstaden", 55.68, 12.57, "+1:00"}, {"Aarhus", "Midtjylland", 56.16, 10.20, "+1:00"}, {"Odense", "Syddanmark", 55.40, 10.39, "+1:00"},
			{"Aalborg", "Nordjylland", 57.05, 9.92, "+1:00"}}},
	{code: "IE", country: "Ireland", postcode: "N####", phone: "0##-###-####", cell: "08#-###-####",
		idName: "PPS", idPattern: "#######A", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Jack,James,Noah,Conor,Seán,Darragh"), female: words("Emily,Grace,Fiadh,Sophie,Aoife,Saoirse"),
		last: words("Murphy,Kelly,O'Sullivan,Walsh,Smith,O'Brien,Byrne,Ryan"), streets: words("Main Street,O'Connell Street,Church Road,Grafton Street"),
		places: []place{{"Dublin", "Dublin", 53.35, -6.26, "0:00"}, {"Cork", "Cork", 51.90, -8.47, "0:00"}, {"Galway", "Galway", 53.27, -9.05, "0:00"},
			{"Limerick", "Limerick", 52.66, -8.63, "0:00"}}},
	{code: "IN", country: "India", postcode: "N#####", phone: "9#########", cell: "9#########",
		idName: "UIDAI", idPattern: "N###########", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Aarav,Vihaan,Arjun,Rohan,Aditya,Kabir"), female: words("Aanya,Diya,Ananya,Isha,Priya,Saanvi"),
		last: words("Sharma,Patel,Singh,Kumar,Gupta,Reddy,Iyer,Nair"), streets: words("MG Road,Station Road,Gandhi Road,Nehru Marg"),
		places: []place{{"Mumbai", "Maharashtra", 19.08, 72.88, "+5:30"}, {"Delhi", "Delhi", 28.61, 77.21, "+5:30"}, {"Bengaluru", "Karnataka", 12.97, 77.59, "+5:30"},
			{"Chennai", "Tamil Nadu", 13.08, 80.27, "+5:30"}, {"Kolkata", "West Bengal", 22.57, 88.36, "+5:30"}, {"Hyderabad", "Telangana", 17.39, 78.49, "+5:30"},
			{"Pune", "Maharashtra", 18.52, 73.86, "+5:30"}}},
	{code: "IR", country: "Iran", postcode: "N####", phone: "0##-########", cell: "09##-###-####",
		idName: "", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Amir,Ali,Mohammad,Reza,Hossein,Parsa"), female: words("Zahra,Fatemeh,Maryam,Nazanin,Sara,Parisa"),
		last: words("Ahmadi,Hosseini,Mohammadi,Rezaei,Moradi,Karimi,Jafari,Rahimi"), streets: words("Valiasr,Enghelab,Azadi,Ferdowsi"),
		places: []place{{"Tehran", "Tehran", 35.69, 51.39, "+3:30"}, {"Mashhad", "Razavi Khorasan", 36.30, 59.61, "+3:30"}, {"Isfahan", "Isfahan", 32.65, 51.67, "+3:30"},
			{"Tabriz", "East Azerbaijan", 38.08, 46.29, "+3:30"}, {"Shiraz", "Fars", 29.59, 52.58, "+3:30"}}},
	{code: "MX", country: "Mexico", postcode: "N####", phone: "(6##) ### ####", cell: "(6##) ### ####",
		idName: "NSS", idPattern: "## ## ## ####-#", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Santiago,Mateo,Sebastián,Leonardo,Diego,Emiliano"), female: words("Sofía,Valentina,Regina,Ximena,Camila,Renata"),
		last: words("Hernández,García,Martínez,López,González,Rodríguez,Pérez,Sánchez"), streets: words("Avenida Reforma,Calle Hidalgo,Calle Morelos,Avenida Juárez"),
		places: []place{{"Ciudad de México", "Ciudad de México", 19.43, -99.13, "-6:00"}, {"Guadalajara", "Jalisco", 20.66, -103.35, "-6:00"}, {"Monterrey", "Nuevo León", 25.69, -100.32, "-6:00"},
			{"Puebla", "Puebla", 19.04, -98.21, "-6:00"}, {"Tijuana", "Baja California", 32.51, -117.04, "-8:00"}, {"Mérida", "Yucatán", 20.97, -89.59, "-6:00"}}},
	{code: "NL", country: "Netherlands", postcode: "N### AA", postcodeIsString: true, phone: "(0###) ######", cell: "(06) ########",
		idName: "BSN", idPattern: "########", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Daan,Sem,Lucas,Levi,Finn,Milan"), female: words("Emma,Julia,Tess,Sophie,Zoë,Mila"),
		last: words("de Jong,Jansen,de Vries,van den Berg,Bakker,Visser,Smit,Meijer"), streets: words("Kerkstraat,Dorpsstraat,Schoolstraat,Molenweg"),
		places: []place{{"Amsterdam", "Noord-Holland", 52.37, 4.90, "+1:00"}, {"Rotterdam", "Zuid-Holland", 51.92, 4.48, "+1:00"}, {"Utrecht", "Utrecht", 52.09, 5.12, "+1:00"},
			{"Eindhoven", "Noord-Brabant", 51.44, 5.47, "+1:00"}, {"Groningen", "Groningen", 53.22, 6.57, "+1:00"}}},
	{code: "NO", country: "Norway", postcode: "####", postcodeIsString: true, phone: "########", cell: "########",
		idName: "FN", idPattern: "######N####", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Jakob,Emil,Noah,Oliver,Filip,Håkon"), female: words("Nora,Emma,Ella,Maja,Olivia,Ingrid"),
		last: words("Hansen,Johansen,Olsen,Larsen,Andersen,Pedersen,Nilsen,Kristiansen"), streets: words("Karl Johans gate,Storgata,Kirkeveien,Skolegata"),
		places: []place{{"Oslo", "Oslo", 59.91, 10.75, "+1:00"}, {"Bergen", "Vestland", 60.39, 5.32, "+1:00"}, {"Trondheim", "Trøndelag", 63.43, 10.40, "+1:00"},
			{"Stavanger", "Rogaland", 58.97, 5.73, "+1:00"}, {"Tromsø", "Troms", 69.65, 18.96, "+1:00"}}},
	{code: "NZ", country: "New Zealand", postcode: "N###", phone: "(###)-###-####", cell: "(###)-###-####",
		idName: "", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Oliver,Jack,Leo,Noah,George,Nikau"), female: words("Isla,Charlotte,Amelia,Olivia,Aroha,Mia"),
		last: words("Smith,Wilson,Williams,Brown,Taylor,Jones,Walker,Ngata"), streets: words("Queen Street,Lambton Quay,Colombo Street,George Street"),
		places: []place{{"Auckland", "Auckland", -36.85, 174.76, "+12:00"}, {"Wellington", "Wellington", -41.29, 174.78, "+12:00"}, {"Christchurch", "Canterbury", -43.53, 172.64, "+12:00"},
			{"Dunedin", "Otago", -45.88, 170.50, "+12:00"}, {"Hamilton", "Waikato", -37.79, 175.28, "+12:00"}}},
	{code: "RS", country: "Serbia", postcode: "N####", phone: "0##-####-###", cell: "06#-####-###",
		idName: "SID", idPattern: "#########", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Luka,Dušan,Stefan,Nikola,Miloš,Vuk"), female: words("Milica,Jelena,Ana,Teodora,Sara,Dunja"),
		last: words("Jovanović,Petrović,Nikolić,Marković,Đorđević,Stojanović,Ilić,Pavlović"), streets: words("Knez Mihailova,Bulevar oslobođenja,Nemanjina,Cara Dušana"),
		places: []place{{"Beograd", "Beograd", 44.79, 20.45, "+1:00"}, {"Novi Sad", "Južnobački", 45.27, 19.83, "+1:00"}, {"Niš", "Nišavski", 43.32, 21.90, "+1:00"},
			{"Kragujevac", "Šumadijski", 44.01, 20.91, "+1:00"}}},
	{code: "TR", country: "Turkey", postcode: "N####", phone: "(###)-###-####", cell: "(###)-###-####",
		idName: "", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Yusuf,Eymen,Ömer,Mustafa,Emir,Kerem"), female: words("Zeynep,Elif,Defne,Eylül,Azra,Ecrin"),
		last: words("Yılmaz,Kaya,Demir,Şahin,Çelik,Yıldız,Yıldırım,Öztürk"), streets: words("İstiklal Cd,Atatürk Sk,Cumhuriyet Cd,Bağdat Cd"),
		places: []place{{"İstanbul", "İstanbul", 41.01, 28.98, "+3:00"}, {"Ankara", "Ankara", 39.93, 32.86, "+3:00"}, {"İzmir", "İzmir", 38.42, 27.14, "+3:00"},
			{"Antalya", "Antalya", 36.90, 30.70, "+3:00"}, {"Bursa", "Bursa", 40.19, 29.06, "+3:00"}, {"Erzurum", "Erzurum", 39.90, 41.27, "+3:00"}}},
	{code: "UA", country: "Ukraine", postcode: "N####", phone: "(0##) ###-####", cell: "(0##) ###-####",
		idName: "", maleTitles: mrMs, femaleTitles: mrMsMiss,
		male: words("Олександр,Андрій,Ярослав,Богдан,Тарас,Дмитро"), female: words("Олена,Оксана,Марія,Ірина,Софія,Наталія"),
		last: words("Шевченко,Коваленко,Бондаренко,Ткаченко,Кравченко,Олійник,Мельник,Бойко"), streets: words("Хрещатик,Шевченка,Лесі Українки,Сумська"),
		places: []place{{"Київ", "Київська", 50.45, 30.52, "+2:00"}, {"Харків", "Харківська", 49.99, 36.23, "+2:00"}, {"Одеса", "Одеська", 46.48, 30.72, "+2:00"},
			{"Львів", "Львівська", 49.84, 24.03, "+2:00"}, {"Дніпро", "Дніпропетровська", 48.46, 35.05, "+2:00"}}},
}

var (
	adjectives = words("yellow,tiny,blue,happy,sad,heavy,lazy,brown,crazy,orange,purple,silver,golden,red,big,small,beautiful,ticklish,organic,black,white,green")
	animals    = words("peacock,gorilla,bird,lion,tiger,elephant,koala,rabbit,swan,frog,ladybug,wolf,leopard,fish,panda,dog,cat,bear,goose,butterfly,duck,snake,zebra,ostrich,mouse,monkey,rhino,buffalo")
	passwords  = words("addison,zxcvbn,pepper,password,123456,qwerty,dragon,monkey,sunshine,letmein,shadow,master,hunter,soccer,batman,trustno1,bailey,charlie,summer,buster")
)

// asciiFold maps letters to what randomuser puts in e-mail addresses.
var asciiFold = map[rune]string{
	'ä': "a", 'å': "a", 'á': "a", 'à': "a", 'â': "a", 'ã': "a", 'ë': "e", 'é': "e", 'è': "e", 'ê': "e",
	'ï': "i", 'í': "i", 'ì': "i", 'î': "i", 'ı': "i", 'ö': "o", 'ó': "o", 'ò': "o", 'ô': "o", 'õ': "o", 'ø': "o",
	'ü': "u", 'ú': "u", 'ù': "u", 'û': "u", 'ç': "c", 'ñ': "n", 'ß': "ss", 'æ': "ae", 'š': "s", 'ž': "z",
	'č': "c", 'ć': "c", 'đ': "dj", 'ş': "s", 'ğ': "g",
	'а': "a", 'б': "b", 'в': "v", 'г': "h", 'ґ': "g", 'д': "d", 'е': "e", 'є': "ie", 'ж': "zh", 'з': "z",
	'и': "y", 'і': "i", 'ї': "i", 'й': "i", 'к': "k", 'л': "l", 'м': "m", 'н': "n", 'о': "o", 'п': "p",
	'р': "r", 'с': "s", 'т': "t", 'у': "u", 'ф': "f", 'х': "kh", 'ц': "ts", 'ч': "ch", 'ш': "sh", 'щ': "shch",
	'ь': "", 'ю': "iu", 'я': "ia",
}

// emailPart folds a name to lower-case ASCII letters.
func emailPart(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(r)
		case r == 'i' || r == 'İ':
			b.WriteByte('i')
		default:
			b.WriteString(asciiFold[r])
		}
	}
	return b.String()
}
